"""What the gateway does besides running exchanges, one module each: acknowledgements,
retention on the partner's server, rectification notices, and the incremental watermark."""
