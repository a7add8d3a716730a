"""The private diffusers attributes teacli relies on are still where teacli reads them: after a diffusers upgrade,
a failure here names the one function in teacli/engine/diffusers_internals.py to fix."""

import types

import torch
from diffusers import FirstBlockCacheConfig
from diffusers.hooks import apply_first_block_cache
from diffusers.hooks.hooks import HookRegistry, ModelHook, StateManager
from support import make_flux_transformer

from teacli.engine import diffusers_internals as internals
from teacli.engine.state import TeaCacheState


def test_a_registry_is_found_on_its_module_and_lists_its_hooks_in_order():
    module = torch.nn.Linear(2, 2)
    assert internals.hook_registry(module) is None and not internals.has_hook_registry(module)
    registry = HookRegistry.check_if_exists_or_initialize(module)
    assert internals.hook_registry(module) is registry is internals.own_hook_registry(module)
    registry.register_hook(ModelHook(), "first")
    registry.register_hook(ModelHook(), "second")
    assert internals.hook_order(registry) == ["first", "second"]
    registry.remove_hook("first", recurse=False)
    registry.remove_hook("second", recurse=False)
    assert "forward" in vars(module)  # what restore_class_forward takes off
    internals.restore_class_forward(module)
    internals.drop_hook_registry(module)
    assert "forward" not in vars(module) and not internals.has_hook_registry(module)


def test_diffusers_resets_the_state_of_a_stateful_hook():
    class Counting(internals.StatefulModelHook):
        resets = 0

        def reset_state(self, module):
            self.resets += 1
            return module

    module = torch.nn.Linear(2, 2)
    hook = Counting()
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, "counting")
    internals.hook_registry(module).reset_stateful_hooks()
    assert hook.resets == 1


def test_a_state_manager_shows_its_context_and_its_states():
    manager = StateManager(TeaCacheState)
    assert internals.current_context(manager) is None
    manager.set_context(types.SimpleNamespace(name="cond"))  # what cache_context sets: an object with a name
    state = manager.get_state()
    assert internals.current_context(manager).name == "cond"
    assert internals.context_states(manager) == {"cond": state}


def test_diffusers_own_caches_are_recognised_by_their_hooks():
    model = make_flux_transformer()
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=0.1))
    found = {
        internals.diffusers_cache_of_hook(name, hook)
        for sub in model.modules()
        if (registry := internals.own_hook_registry(sub)) is not None
        for name, hook in registry.hooks.items()
    }
    assert found == {"FirstBlockCache"}
    assert internals.diffusers_cache_of_hook("someone_else", ModelHook()) is None


def test_the_block_names_and_patterns_diffusers_caches_use_are_reachable():
    assert {"transformer_blocks", "single_transformer_blocks"} <= set(internals.transformer_block_identifiers())
    assert internals.taylorseer_block_patterns()
    model = make_flux_transformer()
    assert internals.unregistered_block_class(list(model.transformer_blocks)) is None
    assert internals.unregistered_block_class([torch.nn.Linear(2, 2)]) == "Linear"


def test_context_parallel_root_hooks_are_named_as_diffusers_names_them():
    assert internals.is_context_parallel_root_hook("cp_input---")
    assert not internals.is_context_parallel_root_hook("cp_input---blocks.0")
    assert internals.context_parallel_config(make_flux_transformer()) is None
