//! One module per cloud image service, each an [`super::ImageService`] with its error table:
//! the clouds' own copy APIs ([`huawei`] IMS jobs, [`alibaba`] ECS, [`aws`] EC2, [`tencent`]
//! CVM) and [`openstack`] (Keystone v3 + Glance v2, where the operator moves the bytes).

pub mod alibaba;
pub mod aws;
pub mod huawei;
pub mod openstack;
pub mod tencent;

use super::sharing::Sharing;
use crate::api::v1alpha1::ProviderKind;

/// What each cloud states about sharing an image (its module's `SHARING`); `None`: it cannot.
pub fn sharing(kind: ProviderKind) -> Option<&'static Sharing> {
    match kind {
        ProviderKind::Huawei => Some(&huawei::SHARING),
        ProviderKind::Alibaba => Some(&alibaba::SHARING),
        ProviderKind::Aws => Some(&aws::SHARING),
        ProviderKind::Tencent => Some(&tencent::SHARING),
        ProviderKind::Openstack => Some(&openstack::SHARING),
        ProviderKind::Oci => None,
    }
}
