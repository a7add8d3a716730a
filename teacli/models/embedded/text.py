"""Text encoders and tokenizers for the embedded tiny pipelines, built offline.

No BPE or SentencePiece vocabulary can be downloaded, so every tiny pipeline tokenizes with a
word-level `tokenizers` model over a small fixed vocabulary, wrapped in PreTrainedTokenizerFast
(the class real checkpoints load), and encodes with the real transformers encoder classes at a
miniature size. Each builder reseeds first, so one component's size never shifts another's weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

SEED = 0
T = TypeVar("_T")
TEXT_DIM = 32  # CLIP hidden size (= pooled_projection_dim) and T5 d_model (= joint_attention_dim)
CLIP_MAX_LENGTH = 77  # FluxPipeline reads tokenizer.model_max_length; 77 as for real CLIP
T5_MAX_LENGTH = 512  # FluxPipeline caps max_sequence_length at 512

# Special tokens come first so their ids are stable. EOS must not be id 2: transformers'
# CLIPTextTransformer treats eos_token_id == 2 as a pre-2023 legacy config and pools at
# input_ids.argmax() (the highest id in the row) instead of at the first EOS.
PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)

WORDS = """
a an the of on in with at by and or to from under over above below behind near next
top bottom left right center middle front back corner side edge
small large big tiny huge tall short long wide thin thick round square flat bright dark
light pale deep soft sharp smooth rough shiny old new young happy sad
red orange yellow green blue purple pink brown black white gray grey gold silver
circle square triangle rectangle star heart line dot stripe grid pattern shape
cat dog bird fish horse cow sheep lion tiger bear rabbit fox owl duck frog snake
tree flower grass leaf forest mountain river lake sea ocean beach sky cloud sun moon rain snow
house castle city street road bridge tower room window door table chair car boat train
man woman child person face hand robot astronaut knight wizard
apple banana cake cup bottle book lamp clock ball hat shoe
background foreground landscape portrait scene view night day sunset sunrise morning evening
photo painting drawing sketch illustration render style art cartoon anime watercolor oil
realistic detailed simple abstract minimal colorful vintage modern futuristic cinematic
high quality resolution lighting shadow reflection texture
is are sitting standing flying running walking holding looking
one two three many some
, .
""".split()


def vocabulary() -> dict[str, int]:
    tokens = list(SPECIAL_TOKENS) + list(dict.fromkeys(WORDS))  # dedupe, keep order
    return {token: index for index, token in enumerate(tokens)}


VOCAB = vocabulary()
PAD_ID, UNK_ID, BOS_ID, EOS_ID = (VOCAB[token] for token in SPECIAL_TOKENS)


def word_level_tokenizer(template: str, max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a word-level `tokenizers` model, as no BPE/SentencePiece vocab can be downloaded.

    The post-processor appends EOS so CLIP can pool at it and T5 sees the end marker it expects.
    """
    tokenizer = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template,
        pair=f"{template} $B:1 {EOS}:1",
        special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=max_length,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
    )


def clip_tokenizer() -> PreTrainedTokenizerFast:
    return word_level_tokenizer(f"{BOS} $A {EOS}", CLIP_MAX_LENGTH)


def t5_tokenizer() -> PreTrainedTokenizerFast:
    return word_level_tokenizer(f"$A {EOS}", T5_MAX_LENGTH)


def clip_text_encoder() -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(VOCAB),
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        projection_dim=TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act="quick_gelu",
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    return CLIPTextModel(config)


def t5_text_encoder() -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(VOCAB),
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,  # FLUX's T5 v1.1 XXL has dropout 0.1; zero keeps even train-mode runs stable
        feed_forward_proj="gated-gelu",  # as T5 v1.1, the encoder FLUX uses
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )
    return T5EncoderModel(config)


def seeded(factory: Callable[[], T]) -> T:
    """Reseed before each component so one component's size never shifts another's weights."""
    torch.manual_seed(SEED)
    return factory()
