"""virtbus's benchmarks, each printing a table beside libvirt's figure: ``python -m bench``."""
