"""teacli-shapes: a small text-to-image FluxPipeline that teacli trains and ships itself.

`shapes` draws the training pictures and their captions, `model` holds the component configs,
`train` trains the VAE and then the transformer from scratch on a CPU, and `checker` reads a
generated picture back (background colour, shape colour, shape) so quality has a meaning.
"""
