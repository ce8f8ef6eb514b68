"""How accurate RetinaMask is against detectron2's models, and what each mechanism adds."""
