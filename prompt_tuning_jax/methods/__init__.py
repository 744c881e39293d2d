"""Trainable methods on a frozen T5: one design that prompt tuning, model tuning and their
extensions plug into.

A method is a frozen dataclass of its settings, a subclass of `Method` (`base.py`). The T5
holds one (`T5(config, method=...)`, default `ModelTuning()`; a decoder-only LM too,
`DecoderOnly(config, method=...)`, through its own hook point, `decoder_prompt`) and asks it
for its `hooks()`: functions called at fixed points of the T5, each None when unused
(`hooks.py`: the encoder's input embedding step, its attention mask, each layer's input,
each attention's keys and values, each MLP's intermediate activations). A hook creates the
method's flax modules in the T5 module that calls it, so their `name=`s give the method's
parameter paths.
Per-example inputs a method reads (prompts of a mixed batch, the task index of a mixture)
reach the model one way: `method_inputs=MethodInputs(...)` of `T5.__call__` / `encode` /
`decode` (`MethodInputs.from_batch` for a training batch).

Everything else asks the method, never its name: the trainable rule (`optim.partition`),
which parameters a checkpoint may lack and which start as prompts (`run_setup`), the numpy
exports beside each checkpoint (`checkpoints/train_state.py`), the PEFT adapter type
(`export.py`, `checkpoints/peft.py`), the added encoder positions (`dry_run.py`), and the
runs it refuses (`check`).

`METHODS` is the registry: each is a gin configurable `methods.<ClassName>`, and
`gin/methods/<name>.gin` sets METHOD to it; `PARTS` are the settings objects methods take
(attention `Visibility`, the multi-task prompt combinations), configurable the same way.
To add one: its class here (modules beside it), its gin file, its PEFT form in
`checkpoints/peft.py` if it has one.

Imports point one way: `models` imports `methods`; a method imports flax, jax, `prompts`,
`masks`, `optim`, `errors` and this package only.
"""
from prompt_tuning_jax.methods.base import Method
from prompt_tuning_jax.methods.hooks import Hooks, MethodInputs
from prompt_tuning_jax.methods.ia3 import IA3
from prompt_tuning_jax.methods.model_tuning import ModelTuning
from prompt_tuning_jax.methods.multitask_prompts import (AddTaskPrompt, ConcatTaskFeatures,
                                                         ConcatTaskPrompt, MultiTaskPrompts,
                                                         ProjectSharedPrompt)
from prompt_tuning_jax.methods.per_layer_prompts import PerLayerPrompts
from prompt_tuning_jax.methods.prefix_tuning import PrefixTuning
from prompt_tuning_jax.methods.prompt_tuning import (DECODER_ONLY_PROMPT_PATH, PROMPT_PATH,
                                                     DecoderOnlyPromptTuning, PromptTuning)
from prompt_tuning_jax.methods.visibility import Visibility

METHODS = (ModelTuning, PromptTuning, MultiTaskPrompts, PerLayerPrompts, PrefixTuning, IA3,
           DecoderOnlyPromptTuning)
# Settings objects the methods take, gin configurables `methods.<ClassName>` as well.
PARTS = (Visibility, AddTaskPrompt, ConcatTaskPrompt, ConcatTaskFeatures, ProjectSharedPrompt)

__all__ = ['DECODER_ONLY_PROMPT_PATH', 'IA3', 'METHODS', 'PARTS', 'PROMPT_PATH', 'AddTaskPrompt',
           'ConcatTaskFeatures', 'ConcatTaskPrompt', 'DecoderOnlyPromptTuning', 'Hooks',
           'Method', 'MethodInputs', 'ModelTuning', 'MultiTaskPrompts', 'PerLayerPrompts',
           'PrefixTuning', 'ProjectSharedPrompt', 'PromptTuning', 'Visibility']
