"""File formats read by `vigila.ingest.readers` that need more than a few lines: dBase (`.dbf`) and DATASUS `.dbc`."""
