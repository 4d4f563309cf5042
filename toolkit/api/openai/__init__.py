"""The OpenAI API as vLLM and Aphrodite document it: the protocol (pydantic), the routes
(chat and text completions, embeddings, models, tokenize), sampling fields -> SamplingParams,
prompts, tools, guided decoding, logprobs and beam search."""
