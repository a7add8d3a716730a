"""teacli-shapes: a small text-to-image FluxPipeline that teacli trains and ships itself.

`shapes` draws the training pictures and their captions, `model` holds the component configs,
`train` trains the VAE and then the transformer from scratch on a CPU, and `checker` reads a
generated picture back (background colour, shape colour, shape) so quality has a meaning.
teacli-shapes-fine, trained the same way from `model.VARIANTS`, has a finer latent (64 image tokens
instead of 16) and more blocks, for checking that cache policies generalise.
"""
