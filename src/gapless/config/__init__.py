"""The configuration models: a recorder's file and the cluster configuration the management
server stores and hands out."""
