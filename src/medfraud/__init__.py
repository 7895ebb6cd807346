"""medfraud: finding fraud in medical-insurance claims."""

__version__ = "0.1.0"
