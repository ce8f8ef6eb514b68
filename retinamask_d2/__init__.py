"""RetinaMask for detectron2: importing this package registers the `RetinaMask` meta-architecture."""
