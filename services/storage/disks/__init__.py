"""The disk inventory of this host's domains and the block jobs run on them
(libvirt's virDomainBlockCopy/Commit/Pull/JobAbort, run by the host agent)."""
