"""catsdogs runtime: labels, image preprocessing and model loading shared by training and serving.

Nothing in this package imports the `training` package: the served Bento carries only this one.
"""

__version__ = "0.1.0"
