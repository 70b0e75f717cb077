"""The host executor, `bnb-ci`: runs the planned jobs' step programs on this machine with the
toolchains it finds (toolchains, doctor), caches their outputs (artifact_cache) and writes the same
output folder as the Dagger module (outputs). `launch` is what `./bnb` runs. Never imports dagger."""
