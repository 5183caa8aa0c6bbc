"""The Python handler a data team would otherwise write for one of these
functions: import boto3, build the same clients at init, then ask the Lambda
Runtime API for the next invocation. Used only to measure its cold start."""

import os
import urllib.request

import boto3

ecs = boto3.client("ecs")
dynamodb = boto3.client("dynamodb")
sns = boto3.client("sns")
sfn = boto3.client("stepfunctions")

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
urllib.request.urlopen(f"http://{api}/2018-06-01/runtime/invocation/next", timeout=30)
