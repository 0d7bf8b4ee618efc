"""Small shared helpers: paths, atomic I/O, registries, dataclass configs."""
