"""REST API of the model registry: `/api/v1/models/` and `/api/v1/rollouts/`."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from campaign_express.permissions import CanChange
from campaign_express.tasks import enqueue_on_commit
from inference import selectors, services
from inference.models import ModelVersion, Rollout


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "version", "status", "location", "sha256", "size_bytes",
                  "schema_version", "validation", "failure_reason", "description",
                  "created_at", "activated_at"]
        read_only_fields = fields


class ModelVersionDetailSerializer(ModelVersionSerializer):
    runtime = serializers.SerializerMethodField()

    class Meta(ModelVersionSerializer.Meta):
        fields = [*ModelVersionSerializer.Meta.fields, "runtime"]
        read_only_fields = fields

    def get_runtime(self, model_version: ModelVersion) -> dict:
        return selectors.model_version_runtime_state(model_version=model_version)


class ModelUploadSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=100, default="offer-scoring")
    version = serializers.CharField(max_length=50)
    file = serializers.FileField(help_text="The ONNX model file.")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class RolloutSerializer(serializers.ModelSerializer):
    model_version = serializers.StringRelatedField()

    class Meta:
        model = Rollout
        fields = ["id", "model_version", "stage", "canary_share", "soak_seconds",
                  "min_requests", "max_error_rate", "max_latency_ratio", "baseline_version",
                  "decision", "started_at", "canary_started_at", "finished_at"]
        read_only_fields = fields


class RolloutInputSerializer(serializers.Serializer):
    canary_share = serializers.FloatField(min_value=0.001, max_value=0.5, default=0.1)
    soak_seconds = serializers.IntegerField(min_value=0, default=600)
    min_requests = serializers.IntegerField(min_value=1, default=500)
    max_error_rate = serializers.FloatField(min_value=0, max_value=1, default=0.01)
    max_latency_ratio = serializers.FloatField(min_value=1, default=1.5)


class ModelVersionViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = ModelVersion.objects.all()
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    filterset_fields = ["name", "status"]
    search_fields = ["name", "version", "description"]

    def get_serializer_class(self):
        if self.action == "create":
            return ModelUploadSerializer
        if self.action == "retrieve":
            return ModelVersionDetailSerializer
        return ModelVersionSerializer

    @extend_schema(request=ModelUploadSerializer, responses={201: ModelVersionSerializer},
                   description="Upload an ONNX model; it is validated in the background.")
    def create(self, request, *args, **kwargs):
        upload = ModelUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        data = upload.validated_data
        model_version = services.model_version_upload(
            actor=request.user, name=data["name"], version=data["version"],
            data=data["file"].read(), filename=data["file"].name,
            description=data["description"])
        enqueue_on_commit("inference.tasks.model_version_validate",
                          model_version_id=model_version.pk)
        return Response(ModelVersionSerializer(model_version).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ModelVersionDetailSerializer)
    @action(detail=True, methods=["post"], permission_classes=[CanChange])
    def validate(self, request, pk=None):
        model_version = services.model_version_validate(model_version=self.get_object())
        return Response(ModelVersionDetailSerializer(model_version).data)

    @extend_schema(request=None, responses=ModelVersionDetailSerializer,
                   description="Make this version the one every bidder serves (hot reload).")
    @action(detail=True, methods=["post"], permission_classes=[CanChange])
    def activate(self, request, pk=None):
        model_version = services.model_version_activate(model_version=self.get_object())
        return Response(ModelVersionDetailSerializer(model_version).data)

    @extend_schema(request=None, responses=ModelVersionDetailSerializer)
    @action(detail=True, methods=["post"], permission_classes=[CanChange])
    def retire(self, request, pk=None):
        model_version = services.model_version_retire(model_version=self.get_object())
        return Response(ModelVersionDetailSerializer(model_version).data)

    @extend_schema(request=RolloutInputSerializer, responses={201: RolloutSerializer},
                   description="Validate, canary, soak, then promote or roll back on its own.")
    @action(detail=True, methods=["post"], permission_classes=[CanChange])
    def rollout(self, request, pk=None):
        options = RolloutInputSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        rollout = services.rollout_start(model_version=self.get_object(), actor=request.user,
                                         **options.validated_data)
        return Response(RolloutSerializer(rollout).data, status=status.HTTP_201_CREATED)


class RolloutViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Rollout.objects.select_related("model_version")
    serializer_class = RolloutSerializer
    filterset_fields = ["stage", "model_version"]
