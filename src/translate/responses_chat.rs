//! Chat Completions ⇄ OpenAI Responses (translation.md §4). Being written.
