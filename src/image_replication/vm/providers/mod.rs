//! One module per cloud image service, each an [`super::ImageService`] with its error table:
//! the clouds' own copy APIs ([`huawei`] IMS jobs, [`alibaba`] ECS, [`aws`] EC2, [`tencent`]
//! CVM) and [`openstack`] (Keystone v3 + Glance v2, where the operator moves the bytes).

pub mod alibaba;
pub mod aws;
pub mod huawei;
pub mod openstack;
pub mod tencent;
