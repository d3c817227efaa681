"""The routes: plain handler functions ``async def handler(state, request)`` over a shared
`ServerState`, one module per family. `ROUTES` is the table `create_app` wires up."""

from lmlab.serve.routes import attention, chat, completions, info, tasks

ROUTES = [*info.ROUTES, *completions.ROUTES, *chat.ROUTES, *attention.ROUTES, *tasks.ROUTES]
