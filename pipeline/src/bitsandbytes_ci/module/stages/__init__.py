"""Container recipes of the Dagger module, one module per stage.

`common` holds what every stage shares (paths, the one cache helper, the tool install, the source
subset); `native`, `packaging` (wheel and audit), `release` (pre-release and publish) and `images`
(lock-images) each turn a planned job into a container; `fanout` runs many of them concurrently and
collects outputs and failures. Nothing here decides *what* to build: that is plan.py's job.
"""
