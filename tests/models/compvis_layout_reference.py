"""A minimal PyTorch copy of CompVis' layout encoder, for parity tests (latent-diffusion is not installed).

`BERTEmbedder(n_embed, n_layer, vocab_size, max_seq_len, use_tokenizer=False)` of
`ldm/modules/encoders/modules.py` over the vendored x-transformers of `ldm/modules/x_transformer.py`,
reduced to the code paths that encoder runs (no masks, memories, rel-pos, talking heads, macaron, ...):
the same modules, the same attribute names (so the same state-dict keys), the same arithmetic.
"""

import torch
from torch import einsum, nn


class AbsolutePositionalEmbedding(nn.Module):
    def __init__(self, dim, max_seq_len):
        super().__init__()
        self.emb = nn.Embedding(max_seq_len, dim)
        nn.init.normal_(self.emb.weight, std=0.02)

    def forward(self, x):
        n = torch.arange(x.shape[1], device=x.device)
        return self.emb(n)[None, :, :]


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4, dropout=0.0):
        super().__init__()
        inner_dim = int(dim * mult)
        project_in = nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU())
        self.net = nn.Sequential(project_in, nn.Dropout(dropout), nn.Linear(inner_dim, dim))

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim, dim_head=64, heads=8):
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        inner_dim = dim_head * heads
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_k = nn.Linear(dim, inner_dim, bias=False)
        self.to_v = nn.Linear(dim, inner_dim, bias=False)
        self.dropout = nn.Dropout(0.0)
        self.to_out = nn.Linear(inner_dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        h = self.heads

        def split(t):  # rearrange 'b n (h d) -> b h n d'
            return t.reshape(b, n, h, -1).permute(0, 2, 1, 3)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        dots = einsum("b h i d, b h j d -> b h i j", q, k) * self.scale
        attn = self.dropout(dots.softmax(dim=-1))
        out = einsum("b h i j, b h j d -> b h i d", attn, v)
        out = out.permute(0, 2, 1, 3).reshape(b, n, -1)  # 'b h n d -> b n (h d)'
        return self.to_out(out)


class Residual(nn.Module):
    def forward(self, x, residual):
        return x + residual


class Encoder(nn.Module):
    """`AttentionLayers(causal=False, pre_norm=True)`: layer types ('a', 'f') * depth."""

    def __init__(self, dim, depth, heads=8, dim_head=64, ff_mult=4):
        super().__init__()
        self.dim = dim
        self.layer_types = ("a", "f") * depth
        self.layers = nn.ModuleList([])
        for layer_type in self.layer_types:
            block = (
                Attention(dim, dim_head=dim_head, heads=heads)
                if layer_type == "a"
                else FeedForward(dim, ff_mult)
            )
            self.layers.append(nn.ModuleList([nn.LayerNorm(dim), block, Residual()]))

    def forward(self, x):
        for norm, block, residual_fn in self.layers:
            residual = x
            x = residual_fn(block(norm(x)), residual)
        return x


class TransformerWrapper(nn.Module):
    def __init__(self, *, num_tokens, max_seq_len, attn_layers, emb_dropout=0.0):
        super().__init__()
        dim = attn_layers.dim
        self.token_emb = nn.Embedding(num_tokens, dim)
        self.pos_emb = AbsolutePositionalEmbedding(dim, max_seq_len)
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.project_emb = nn.Identity()
        self.attn_layers = attn_layers
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token_emb.weight, std=0.02)
        self.to_logits = nn.Linear(dim, num_tokens)

    def forward(self, x, return_embeddings=False):
        x = self.token_emb(x)
        x += self.pos_emb(x)
        x = self.project_emb(self.emb_dropout(x))
        x = self.norm(self.attn_layers(x))
        return x if return_embeddings else self.to_logits(x)


class BERTEmbedder(nn.Module):
    """`BERTEmbedder(use_tokenizer=False)`; `heads`, `dim_head`, `ff_mult` are x-transformers' defaults."""

    def __init__(self, n_embed, n_layer, vocab_size=30522, max_seq_len=77, heads=8, dim_head=64, ff_mult=4):
        super().__init__()
        self.transformer = TransformerWrapper(
            num_tokens=vocab_size,
            max_seq_len=max_seq_len,
            attn_layers=Encoder(n_embed, n_layer, heads, dim_head, ff_mult),
        )

    def forward(self, tokens):
        return self.transformer(tokens, return_embeddings=True)
