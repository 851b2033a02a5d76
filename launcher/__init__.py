"""medbench launcher: the ``launcher`` command. Never imports torch."""
