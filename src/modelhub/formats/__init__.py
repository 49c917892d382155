"""Model-family chat formats: messages -> prompt token ids; generated text -> message."""
