//! Chat Completions ⇄ Anthropic Messages (translation.md §1–§3, §5). Being written.
