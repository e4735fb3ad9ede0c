"""What to build: the YAML loader, compat tables, recipes, kernel specs and the matrix of cells."""
