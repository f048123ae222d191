"""The special token ids every vocabulary shares: PAD, UNK, BOS and EOS, fixed once.

Every SentencePiece model is trained with these ids (tokenizer.py checks a loaded one has them),
so they mean the same in every vocabulary, and the code that pads batches, searches and scores
(batching, search, prediction) reads them here without loading SentencePiece.
"""

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL = (PAD, BOS, EOS)  # ids that never reach detokenized text (UNK shows as ⁇)
