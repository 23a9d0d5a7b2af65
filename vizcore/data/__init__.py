"""Images and image sets: loading, preprocessing, galleries, their features, the disk cache.

The bundled files (sample photos in ``samples/``, the fast-style preset in ``styles/``) sit beside
these modules as package data, read through :mod:`vizcore.core.resources`. Addressed by module
(``from vizcore.data.images import load_sample``); importing this package imports none of them.
"""
