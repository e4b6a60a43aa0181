from rest_framework.permissions import DjangoModelPermissions


class ModelPermissions(DjangoModelPermissions):
    """Django's model permissions, with `view` required for reads (DRF's default lets any
    authenticated user read)."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
    }


class CanView(ModelPermissions):
    """For actions whose own rules live in a service (workflow transitions, reviews): the view
    permission lets the request reach the service, which checks the specific permission."""

    perms_map = {method: ModelPermissions.perms_map["GET"]
                 for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")}
    perms_map["OPTIONS"] = []


class CanChange(ModelPermissions):
    """For actions that change an object's state (activate a model version): the change
    permission, whatever the HTTP method."""

    perms_map = {method: ["%(app_label)s.change_%(model_name)s"]
                 for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")}
    perms_map["OPTIONS"] = []
