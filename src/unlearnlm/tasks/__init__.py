"""Tasks: one module per unlearning scenario behind one interface (:class:`~unlearnlm.tasks.base.Task`).

Built in: ``harm`` (the default), ``custom`` (your own forget request, YAML only), ``privacy`` and
``hallucination`` (planted knowledge). Each registers itself next to its code.
"""

from unlearnlm.tasks import custom, hallucination, harm, privacy  # noqa: F401  (registers the tasks)
from unlearnlm.tasks.base import TASKS, Plan, Task, create_task, register_task, task_class

__all__ = ["TASKS", "Plan", "Task", "create_task", "register_task", "task_class"]
