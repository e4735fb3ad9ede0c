"""Facts read from compiled binaries: ELF symbols, symbol versions, dependencies."""
