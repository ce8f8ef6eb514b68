"""Long, thin, tilted and crossing objects: their own data set, metrics and benchmark."""
