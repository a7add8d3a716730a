"""Prompts for calibration: a built-in varied set, or the user's file (one prompt a line).

The TeaCache paper fits its coefficients on about 70 prompts; the set below mixes objects, people,
animals, scenes, text rendering, styles and compositions so the fit sees the range of inputs a
user's prompts will give.
"""

from __future__ import annotations

import stat
from pathlib import Path

from ..errors import TeacliError
from ..files import NotRegularFile, TooLarge, read_regular_file

BUILTIN_PROMPTS: tuple[str, ...] = (
    # objects
    "a red apple on a wooden table, soft window light",
    "a vintage brass pocket watch lying open on black velvet",
    "a stack of old leather-bound books with a candle beside them",
    "a ceramic teapot with blue flowers painted on it",
    "a pair of worn running shoes on a gravel path",
    "a glass of iced lemonade with condensation on the glass",
    "a bicycle leaning against a yellow brick wall",
    "a bowl of ramen with a soft-boiled egg and green onions, top view",
    "an acoustic guitar resting on a sofa",
    "a tiny succulent in a white pot on a windowsill",
    "a chessboard mid-game, shallow depth of field",
    "a steaming cup of coffee with latte art shaped like a leaf",
    # people
    "a portrait of an elderly fisherman with a grey beard, golden hour",
    "a young woman reading a book in a busy cafe",
    "a child flying a kite on a windy beach",
    "a chef tossing vegetables in a wok over a big flame",
    "a ballet dancer mid-leap on an empty stage, spotlight",
    "two friends laughing on a park bench in autumn",
    "an astronaut floating inside a space station, looking out of a window",
    "a street musician playing the saxophone at night",
    "a farmer holding a basket of tomatoes in a greenhouse",
    "a close-up of hands shaping clay on a pottery wheel",
    "a group of hikers on a mountain ridge at sunrise",
    "a businessman running to catch a train in the rain",
    # animals
    "a golden retriever puppy sleeping on a rug",
    "a red fox in fresh snow, looking at the camera",
    "a hummingbird hovering next to a purple flower",
    "a herd of elephants crossing a river at dusk",
    "a cat sitting on a windowsill watching the rain",
    "an octopus on a coral reef, vivid colours",
    "a barn owl perched on a fence post at twilight",
    "a horse galloping across a misty field",
    # scenes
    "a quiet mountain lake reflecting snowy peaks",
    "a neon-lit street in Tokyo at night after rain",
    "a lighthouse on a rocky cliff during a storm",
    "a field of sunflowers under a blue sky with white clouds",
    "a cozy cabin interior with a fireplace and a reading chair",
    "a desert with sand dunes and a single camel at sunset",
    "a crowded market in Marrakech with spices in baskets",
    "an abandoned greenhouse overgrown with plants",
    "a modern kitchen with marble counters and morning light",
    "a waterfall in a tropical rainforest",
    "a snowy village street with lights in the windows",
    "a city skyline seen from a rooftop at blue hour",
    "an underwater view of a shipwreck with sunbeams",
    "a winding country road through green hills",
    # text rendering
    'a wooden sign that says "OPEN" hanging on a shop door',
    'a neon sign reading "Late Night Diner" above a door',
    'a chalkboard menu with the words "Soup of the Day"',
    'a birthday cake with "Happy 30th" written in icing',
    'a vintage travel poster with the title "Visit the Alps"',
    'a coffee mug printed with the text "Monday Again"',
    'a book cover titled "The Silent Forest" with a minimal tree drawing',
    'a street sign that says "Maple Avenue"',
    # styles
    "a watercolor painting of a harbor with fishing boats",
    "an oil painting of a vase of peonies in the style of the Dutch masters",
    "a pixel art castle on a floating island",
    "a pencil sketch of an old bridge over a river",
    "a low-poly 3D render of a fox in a forest",
    "an art nouveau poster of a woman with flowing hair and flowers",
    "a ukiyo-e print of a great wave and a small boat",
    "a cyberpunk city in the style of a comic book panel",
    "a claymation figure of a friendly robot waving",
    "a minimalist flat vector illustration of a mountain and a sun",
    "a charcoal drawing of a horse's head",
    "a stained glass window showing a peacock",
    "an isometric illustration of a tiny cozy bedroom",
    "a photorealistic macro photo of a dew drop on a leaf",
    # compositions and abstract
    "a red cube on top of a blue sphere next to a green cone",
    "three cats sitting in a row, each a different colour",
    "a cup to the left of a plate, with a fork on the right",
    "a giant teacup in the middle of a meadow with a house inside it",
    "an abstract swirl of orange and teal paint",
    "a geometric pattern of hexagons in gold and black",
    "a surreal clock melting over a tree branch",
    "a paper boat floating in a puddle reflecting skyscrapers",
    "a small robot watering a plant on a balcony",
    "a dragon made of clouds flying over a city",
)


class PromptsError(TeacliError, ValueError):
    """The prompts file cannot be used; the message says why and what to do."""


# A prompts file this large is not a list of prompts (a million prompts of a hundred characters is 100 MB).
MAX_PROMPTS_BYTES = 256 * 2**20


def prompts_text(path: str | Path) -> str:
    """The text of a prompts file: a regular file (never a device or a pipe, which could be endless), at most
    MAX_PROMPTS_BYTES, UTF-8 with or without a byte-order mark."""
    path = Path(path)
    try:
        data = read_regular_file(path, MAX_PROMPTS_BYTES)
    except FileNotFoundError:
        raise PromptsError(f"--prompts {path} does not exist; give a text file with one prompt a line") from None
    except NotRegularFile as error:
        if stat.S_ISDIR(error.mode):
            raise PromptsError(f"--prompts {path} is a directory; give a text file with one prompt a line") from None
        raise PromptsError(f"--prompts {path} is not a regular file (a device or a pipe); give a text file") from None
    except TooLarge:
        raise PromptsError(f"--prompts {path} is larger than {MAX_PROMPTS_BYTES // 2**20} MiB; split it") from None
    except OSError as error:
        raise PromptsError(f"--prompts {path} cannot be read ({error.strerror or error})") from None
    try:
        return data.decode("utf-8-sig")  # an editor's byte-order mark is not part of the first prompt
    except UnicodeDecodeError:
        raise PromptsError(f"--prompts {path} is not UTF-8 text; save it as UTF-8, one prompt a line") from None


def read_prompts(path: str | Path) -> list[str]:
    """One prompt a line; blank lines and lines starting with '#' are skipped."""
    text = prompts_text(path)
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [line for line in prompts if line and not line.startswith("#")]
    if not prompts:
        raise PromptsError(f"--prompts {path} holds no prompts; write one prompt a line ('#' starts a comment)")
    return prompts
