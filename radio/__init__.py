"""radio: smart public-address radio for a Vietnamese ward."""

__version__ = "0.1.0"
