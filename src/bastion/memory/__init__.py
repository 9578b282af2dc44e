"""Conversation memory, windowing, embeddings, vector store and RAG."""

from bastion.memory.base import ConversationMemory, EphemeralMemory

__all__ = ["ConversationMemory", "EphemeralMemory"]
