"""The TUI's screens: one per App mode (hosts, sessions, placement, environments, audit),
plus the replay screen and small dialogs."""
