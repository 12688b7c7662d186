"""Code shared by every track: errors, atomic I/O, config, training scaffold, metrics, report."""
