"""The QEMU host agent: disk inventory and block jobs of one host's QEMU domains over QMP."""
