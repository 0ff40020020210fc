"""Market-data sources. Each returns one UTC day of bars in the contract of core.ohlcv."""
