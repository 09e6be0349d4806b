"""Reproducible container environments: define, build, fingerprint, sync, run.

spec      images/<name>/ (Dockerfile, requirements.lock, env.toml) or a devcontainer
fingerprint  digest of the build inputs, stored as the image label io.gpuhop.fingerprint
build     docker-py build with streamed progress; unchanged inputs reuse the image
archive   thin ``docker save`` streams (pure)
engine    the ImageEngine port and its docker-py adapter; fake.FakeEngine for tests
sync      push only the missing layers to one or many engines, then verify the image ID
run       a job in a container: GPUs by DeviceRequest, workdir mounted, exit code back
"""
