"""A bounded soak of the whole local stack under mixed load, kill -9 and a full disk
(see docs/soak.md)."""
