from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    index = serializers.IntegerField(
        required=False, help_text="Position of the bad item in the batch."
    )
    field = serializers.CharField(allow_null=True)
    reason = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    status = serializers.IntegerField()
    code = serializers.CharField()
    message = serializers.CharField()
    details = ErrorDetailSerializer(many=True)


class ErrorResponseSerializer(serializers.Serializer):
    error = ErrorSerializer()
