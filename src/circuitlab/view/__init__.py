"""Circuit pages: one self-contained, offline HTML file per circuit, and an index of a bench."""
