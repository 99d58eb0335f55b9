"""Mixture-of-Attention personalisation: adapt a trained generator to one subject from a few photos.

- :mod:`emca.personalize.moa`: the MoA layer (prior / personalised experts and a router per cross-attention);
- :mod:`emca.personalize.adapter`: adapter files (the trained state, apart from the base checkpoint);
- :mod:`emca.personalize.data`: a subject's photos as training pairs with person masks;
- :mod:`emca.personalize.module`: the Lightning module (``emca train experiment=personalize``);
- ``emca personalize``: apply an adapter, save router maps.
"""
