#!/usr/bin/env bash
# The security group clusters/aws.yaml pins on every node: inbound SSH (tcp/22) from SSH_CIDR only,
# and all traffic between members of the group (Ray's GCS, object manager, workers). Nothing else is
# open: the dashboard/job API is reached through `ray dashboard`'s SSH tunnel. Ray's own security
# group is not used because it always opens SSH to 0.0.0.0/0.
#
#   SSH_CIDR=$(curl -s https://checkip.amazonaws.com)/32 clusters/aws-security-group.sh
#
# SSH_CIDR     required: the IPv4 range you run `ray up`/`ray dashboard` from (a.b.c.d/n, not /0)
# VPC_ID       default: the region's default VPC
# AWS_REGION   default: us-west-2 (provider.region of aws.yaml)
# GROUP_NAME   default: bioscale-ray
# Prints the group's id: put it in place of sg-0123456789abcdef0 in clusters/aws.yaml.
set -euo pipefail

: "${SSH_CIDR:?set SSH_CIDR to the IPv4 range you SSH from, e.g. SSH_CIDR=\$(curl -s https://checkip.amazonaws.com)/32}"
if ! [[ $SSH_CIDR =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$ ]]; then
    echo "SSH_CIDR=$SSH_CIDR is not an IPv4 range a.b.c.d/n" >&2
    exit 2
fi
if [[ ${SSH_CIDR#*/} == 0 ]]; then
    echo "SSH_CIDR=$SSH_CIDR opens SSH to the whole internet; give the range you SSH from" >&2
    exit 2
fi
region=${AWS_REGION:-us-west-2}
group=${GROUP_NAME:-bioscale-ray}
vpc=${VPC_ID:-$(aws ec2 describe-vpcs --region "$region" --filters Name=isDefault,Values=true \
    --query 'Vpcs[0].VpcId' --output text)}

sg=$(aws ec2 create-security-group --region "$region" --vpc-id "$vpc" --group-name "$group" \
    --description "bioscale Ray cluster: SSH from $SSH_CIDR, all traffic within the group" \
    --query GroupId --output text)
aws ec2 authorize-security-group-ingress --region "$region" --group-id "$sg" --ip-permissions \
    "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=$SSH_CIDR,Description=SSH}]" \
    "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$sg,Description=intra-cluster}]" >/dev/null
echo "$sg"
echo "put $sg in SecurityGroupIds in clusters/aws.yaml (in place of sg-0123456789abcdef0)" >&2
