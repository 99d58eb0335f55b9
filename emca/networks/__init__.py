"""Networks: attention backends, the XingGAN / XingGAN++ generators and the discriminators."""
