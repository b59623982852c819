#!/usr/bin/env bash
# The VPC network clusters/gcp.yaml puts every node in, with the only ingress rules it has: SSH
# (tcp/22) from SSH_CIDR to nodes tagged bioscale-ray, and all traffic between tagged nodes (Ray's
# GCS, object manager, workers). A new custom-mode network denies all other ingress; the `default`
# network is not used because its default-allow-ssh rule opens SSH to 0.0.0.0/0.
#
#   PROJECT_ID=my-gcp-project SSH_CIDR=$(curl -s https://checkip.amazonaws.com)/32 clusters/gcp-firewall.sh
#
# SSH_CIDR     required: the IPv4 range you run `ray up`/`ray dashboard` from (a.b.c.d/n, not /0)
# PROJECT_ID   required: provider.project_id of gcp.yaml
# REGION       default: us-central1 (provider.region of gcp.yaml)
# NETWORK      default: bioscale (the subnetwork name in gcp.yaml's networkInterfaces)
# SUBNET_RANGE default: 10.42.0.0/20
set -euo pipefail

: "${SSH_CIDR:?set SSH_CIDR to the IPv4 range you SSH from, e.g. SSH_CIDR=\$(curl -s https://checkip.amazonaws.com)/32}"
: "${PROJECT_ID:?set PROJECT_ID to the project of clusters/gcp.yaml}"
if ! [[ $SSH_CIDR =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$ ]]; then
    echo "SSH_CIDR=$SSH_CIDR is not an IPv4 range a.b.c.d/n" >&2
    exit 2
fi
if [[ ${SSH_CIDR#*/} == 0 ]]; then
    echo "SSH_CIDR=$SSH_CIDR opens SSH to the whole internet; give the range you SSH from" >&2
    exit 2
fi
region=${REGION:-us-central1}
network=${NETWORK:-bioscale}
tag=bioscale-ray   # tags.items of every node type in gcp.yaml

gcloud compute networks create "$network" --project "$PROJECT_ID" --subnet-mode custom
gcloud compute networks subnets create "$network" --project "$PROJECT_ID" --network "$network" \
    --region "$region" --range "${SUBNET_RANGE:-10.42.0.0/20}"
gcloud compute firewall-rules create "$network-allow-ssh" --project "$PROJECT_ID" \
    --network "$network" --direction INGRESS --action ALLOW --rules tcp:22 \
    --source-ranges "$SSH_CIDR" --target-tags "$tag"
gcloud compute firewall-rules create "$network-allow-internal" --project "$PROJECT_ID" \
    --network "$network" --direction INGRESS --action ALLOW --rules all \
    --source-tags "$tag" --target-tags "$tag"
