"""File formats read by `vigila.readers` that need more than a few lines: dBase (`.dbf`) and DATASUS `.dbc`."""
