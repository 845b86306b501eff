"""A one-resource pulumi-aws program: the baseline bench/plan_time.py compares with."""

import pulumi_aws as aws

aws.ec2.Vpc("baseline", cidr_block="10.0.0.0/16")
