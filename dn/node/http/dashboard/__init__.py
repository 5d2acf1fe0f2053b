"""The dashboard every node serves at `/`, on the API's own port: server-rendered pages (Jinja2
templates, charts as inline SVG), a stylesheet and two small scripts, all shipped in the package
so it works offline and loads quickly on a phone on the LAN. `routes.py` lists the pages and
says why nothing on them can spend money except the playground, under the OpenAI routes' rules.
"""

from dn.node.http.dashboard.routes import add_dashboard_routes

__all__ = ["add_dashboard_routes"]
