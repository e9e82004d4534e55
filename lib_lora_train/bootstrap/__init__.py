"""The bootstrap loop of the guides: one picture (or a few) -> 4 crops -> a weak LoRA -> many generated views of the
character -> the good ones kept -> 16 -> 40 images -> the real character LoRA.

Host-neutral pieces, each small: ``crops`` (cutting the start images), ``prompts`` (the view matrix), ``scoring``
(ranking candidates with the tagger and perceptual hashes), ``selection`` (keeping the top K with views spread),
``rounds`` (what each round wrote, on disk, so the loop resumes after a restart).
"""
