"""Publishing: the products of a run (products.py), the STAC catalog, CKAN datasets and the preview page."""
