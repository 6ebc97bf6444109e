"""The ``virtbus`` command line: virsh's commands, options and output over the bus."""
