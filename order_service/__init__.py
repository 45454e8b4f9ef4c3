"""The order service: exchange orders, their lifecycle, and the wallet release on final status."""
